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
so a reader sees the old or the new one. What a killed writer left (``v3.tmp-*``
folders, ``.CURRENT.tmp-*`` files) is removed by the next writer and does not use up
a version number.

Example::

    from llama_index_ragtune.pipeline.bundle_folders import bundle_versions, current_version

    bundle_versions("ragtune-demo"), current_version("ragtune-demo")    # ['v1', 'v2'], 'v2'
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llama_index_ragtune._atomic import _pid_alive, atomic_write_text, recover_dir

MANIFEST = "manifest.json"
CURRENT = "CURRENT"
BUNDLES_DIR = "bundles"
VERSION_NAME = re.compile(r"^v(\d{1,9})$")
REWRITE = "run the tuning pipeline again to write a fresh bundle"
LOCK = ".lock"
LOCK_TIMEOUT = 600.0  # seconds a writer waits for another one before a BundleError
# what killed writers leave: version folders being written or replaced (_atomic.atomic_dir)
# and the temporary files of CURRENT and history.jsonl (_atomic.atomic_path)
_VERSION_LEFTOVER = re.compile(r"^(v\d{1,9})\.(?:tmp|old)-(\d+)-[0-9a-f]+$")
_FILE_LEFTOVER = re.compile(r"^\.(?:CURRENT|history\.jsonl)\.tmp-(\d+)-[0-9a-f]+(?:\.jsonl)?$")
_HELD = threading.local()  # bundles folders whose lock this thread holds: {path: depth}


class BundleError(ValueError):
    """A bundle is missing, incomplete, edited, or of another format (the message names the file)."""


def bundles_root(path: str | Path) -> Path:
    """The ``bundles`` folder for a run's ``--out`` folder or the ``bundles`` folder itself."""
    path = Path(path).expanduser()
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
    fd = os.open(root / LOCK, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
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
                break
        held[key] = 1
        try:
            yield root
        finally:
            held[key] = 0
    finally:
        os.close(fd)  # releases the lock


def clean_leftovers(path: str | Path) -> list[str]:
    """Remove what killed writers left in a bundles folder; return the names removed.

    A ``v<n>.tmp-*`` folder whose writer is gone is deleted, a ``v<n>.old-*`` folder is
    renamed back when ``v<n>`` is missing (``_atomic.recover_dir``), and stale
    ``.CURRENT.tmp-*`` / ``.history.jsonl.tmp-*`` files are deleted. Writers call it
    holding :func:`bundle_lock`.
    """
    root = bundles_root(path)
    if not root.is_dir():
        return []
    before = set(os.listdir(root))
    versions = set()
    for name in before:
        if m := _VERSION_LEFTOVER.match(name):
            versions.add(m.group(1))
        elif (m := _FILE_LEFTOVER.match(name)) and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(root / name)
    for version in sorted(versions):
        recover_dir(root / version)
    return sorted(before - set(os.listdir(root)))


def next_version(path: str | Path) -> str:
    """The name the next bundle gets: ``v<highest + 1>`` (``v1`` for the first).

    Leftovers of killed writers are removed first, so they use up no number; a
    version folder a live writer is writing still counts. Call it holding
    :func:`bundle_lock`, else another writer may pick the same name.
    """
    root = bundles_root(path)
    clean_leftovers(root)
    numbers = []
    for name in os.listdir(root) if root.is_dir() else []:
        if m := VERSION_NAME.match(name):
            numbers.append(int(m.group(1)))
        elif m := _VERSION_LEFTOVER.match(name):  # a live writer's (left by clean_leftovers)
            numbers.append(int(m.group(1)[1:]))
    return f"v{max(numbers, default=0) + 1}"


def check_version_name(version: Any, source: str, root: Path) -> str:
    """``version`` when it is a version name (``v<number>``), else ``BundleError`` naming
    ``source`` (``CURRENT`` or the argument): a name never leads outside ``root``."""
    if not isinstance(version, str) or not VERSION_NAME.match(version):
        raise BundleError(
            f"{source} names {short(version)}, which is not a bundle version (v1, v2, ...); "
            f"versions here: {bundle_versions(root) or 'none'}; pass one of them, or "
            f"`ragtune rollback --to VERSION` to rewrite {root / CURRENT}"
        )
    return version


def current_version(path: str | Path) -> str | None:
    """The version ``CURRENT`` names (None when there is no bundle yet).

    Raises ``BundleError`` when ``CURRENT`` holds anything but a version name
    (``../elsewhere``, an absolute path, binary junk).
    """
    root = bundles_root(path)
    pointer = root / CURRENT
    if not _exists(pointer):
        return None
    if not _is_file(pointer):
        raise BundleError(
            f"{pointer} is not a file; it must hold the served version's name; versions here: "
            f"{bundle_versions(root) or 'none'}; `ragtune rollback --to VERSION` rewrites it"
        )
    try:
        text = pointer.read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError:
        text = pointer.read_bytes()[:40].decode("utf-8", "backslashreplace")
        check_version_name(text + "…", str(pointer), root)
    if not text:
        raise BundleError(
            f"{pointer} is empty; versions here: {bundle_versions(root) or 'none'}; "
            "`ragtune rollback --to VERSION` rewrites it"
        )
    return check_version_name(text, str(pointer), root)


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
        return atomic_write_text(root / CURRENT, version + "\n")


def resolve_bundle_dir(path: str | Path, version: str | None = None) -> Path:
    """The version folder for ``path``: a version folder, a ``bundles`` folder or a run's
    ``--out`` (their ``CURRENT`` version unless ``version`` is given)."""
    path = Path(path).expanduser()
    if version is None and _is_file(path / MANIFEST):
        return path
    root = bundles_root(path)
    if version is None:
        if not root.is_dir() and not _exists(path):
            raise BundleError(f"bundle not found: {path} does not exist")
        version = current_version(root)
        if version is None:
            raise BundleError(
                f"{root / CURRENT} not found: {path} holds no bundle (pass the --out folder of a "
                "tuning run, its bundles/ folder, or a version folder)"
            )
    else:
        check_version_name(version, "the version argument", root)
    folder = root / version
    recover_dir(folder)
    if not _is_file(folder / MANIFEST):
        raise BundleError(
            f"{folder / MANIFEST} not found: version {version!r} is missing or incomplete; "
            f"versions here: {bundle_versions(root) or 'none'}; {REWRITE}"
        )
    return folder
