"""Crash-safe writes: files and whole folders go to a temporary sibling and are renamed into place.

A process killed at any instant (``SIGKILL``, power loss after the data reached the
disk, an exception) leaves either the previous artifact or the new one, never a
half-written mix.

**Files** (:func:`atomic_write_bytes`, :func:`atomic_write_text`,
:func:`atomic_write_json`, :func:`atomic_path`): the data goes to
``.<name>.tmp-<pid>-<token>`` in the same folder, is flushed and ``fsync``-ed, then
``os.replace`` puts it in place (atomic on POSIX and Windows).

**Folders** (:func:`atomic_dir`), the protocol:

1. Leftovers of earlier crashed writers are resolved (:func:`recover_dir`).
2. The caller writes the new folder into the empty sibling ``<dir>.tmp-<pid>-<token>``.
   A crash here leaves ``<dir>`` untouched; the temporary folder is removed later.
3. Every file in it is ``fsync``-ed (one that did not reach the disk, full or failing,
   ends the write here: ``<dir>`` is left as it was). Then, holding an exclusive lock on
   the parent folder (``flock``; serialises writers of the same parent across processes
   and threads): ``<dir>`` is renamed to ``<dir>.old-<pid>-<token>``, the temporary
   folder is renamed to ``<dir>``, and the old one is deleted.
4. A crash between the two renames leaves no ``<dir>`` but a complete
   ``<dir>.old-*``: :func:`recover_dir` (run by the next writer, and by loaders that
   find ``<dir>`` missing) renames it back, i.e. rolls back to the old version. A
   crash while deleting ``<dir>.old-*`` leaves the new ``<dir>`` in place; the
   leftover is removed by the next writer.

Leftovers are only touched when their writer is gone: ``.old-*`` folders under the
lock, ``.tmp-*`` folders when the process id in their name is not alive (or, for
this process, when no write is in progress there). On Windows (no ``flock``) and on file systems without
locks, the process-id check alone applies.

Example::

    from llama_index_ragtune._atomic import atomic_dir, atomic_write_json

    atomic_write_json("run/report.json", {"ndcg@10": 0.71})
    with atomic_dir("run/model") as tmp:        # tmp is an empty sibling folder
        model.save_pretrained(tmp)              # a crash here leaves run/model as it was
    # run/model is now the new folder
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import numbers
import os
import re
import secrets
import shutil
import stat
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from llama_index_ragtune._atomic_disk import (
    _UNWRITABLE,
    _fsync_dir,
    _make_parent,
    _naming,
    _unwritable,
    fsync_tree,
)

__all__ = [
    "atomic_dir",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_file_target",
    "fsync_tree",
    "recover_dir",
    "sha256_file",
    "strict_json",
]

_ACTIVE: set[str] = set()  # temporary folders this process is writing right now
_ACTIVE_LOCK = threading.Lock()


# ---------------------------------------------------------------------------- files


def _is_active(path: Path) -> bool:
    with _ACTIVE_LOCK:
        return str(path) in _ACTIVE


def _inside_active_dir(path: Path) -> bool:
    text = str(path.absolute())
    with _ACTIVE_LOCK:
        return any(text.startswith(active + os.sep) for active in _ACTIVE)


def check_file_target(path: str | os.PathLike) -> None:
    """Refuse, before anything is written, a folder where the file ``path`` is to be put
    (``os.replace`` would fail only after the whole file was written): an
    ``IsADirectoryError`` naming ``path``. A symbolic link to a folder is replaced, not refused.

    Example::

        check_file_target("out/vectors.npy")   # IsADirectoryError when it is a folder
    """
    if os.path.isdir(path) and not os.path.islink(path):
        raise IsADirectoryError(
            errno.EISDIR,
            "a folder is where this file is written; nothing was written: move the folder away "
            "(or write elsewhere)",
            os.fspath(path),
        )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    For writers that need a file name (``faiss.write_index``, ``np.save``). On an
    exception the temporary file is removed and ``path`` is left as it was.

    Example::

        with atomic_path("index.faiss") as tmp:
            faiss.write_index(index, str(tmp))
    """
    target = Path(path)
    check_file_target(target)
    _make_parent(target)
    # keep the suffix: some writers append theirs when it is missing (np.save adds .npy)
    tmp = target.with_name(
        f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}{target.suffix}"
    )
    try:
        with _naming(target, tmp):
            yield tmp
            deferred = _inside_active_dir(target)  # atomic_dir syncs its whole folder once
            if not deferred:
                with open(tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
        os.replace(tmp, target)
        if not deferred:
            _fsync_dir(target.parent)
    finally:
        _remove(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and a rename (no half-written file).

    Example::

        atomic_write_bytes("weights.bin", blob)
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`).

    Example::

        atomic_write_text("report.md", "# Results\\n")
    """
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(
    path: str | os.PathLike, obj: Any, *, strict: bool = False, **dumps_kwargs: Any
) -> Path:
    """Serialise ``obj`` as JSON (``indent=2`` unless given) and write it atomically.

    ``strict=True`` writes strict JSON: every NaN or infinite float becomes ``null``
    (:func:`strict_json`), where Python's default writes bare ``NaN`` / ``Infinity``
    tokens that JavaScript, ``jq`` and most other JSON readers refuse.

    Example::

        atomic_write_json("manifest.json", {"format_version": 2, "score": float("nan")}, strict=True)
        # {"format_version": 2, "score": null}
    """
    dumps_kwargs.setdefault("indent", 2)
    if strict:
        obj = strict_json(obj)
        dumps_kwargs["allow_nan"] = False
    return atomic_write_text(path, json.dumps(obj, **dumps_kwargs))


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float (NumPy's too) inside dicts, lists and
    tuples replaced by ``None``, so ``json.dumps(..., allow_nan=False)`` writes it as strict
    JSON (``null``); everything else is returned as it is.

    Example::

        strict_json({"ndcg": float("nan"), "runs": [1.0, float("inf")]})
        # {'ndcg': None, 'runs': [1.0, None]}
    """
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(item) for item in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        with contextlib.suppress(OverflowError):  # a Fraction beyond floats: finite
            if not math.isfinite(value):
                return None
    return value


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB chunks.

    Example::

        sha256_file("index.faiss")   # '9f86d0…'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- folders


def _leftover_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(name)}\.(tmp|old)-(\d+)-[0-9a-f]+$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if not 0 < pid <= 0x7FFFFFFF:  # no process has it (0 would ask about our process group)
        return False
    if os.name != "posix":
        try:
            import psutil
        except ImportError:
            return True  # cannot tell: leave the leftover alone
        return bool(psutil.pid_exists(pid))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _parent_lock(parent: Path) -> Iterator[bool]:
    """Exclusive ``flock`` on the parent folder; yields whether a lock is held."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield False
        return
    try:
        fd = os.open(parent, os.O_RDONLY)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError:  # e.g. a file system without locks
            locked = False
        yield locked
    finally:
        os.close(fd)  # releases the lock


def _remove(path: Path) -> None:
    try:  # nothing there: done (a read-only folder refuses even to unlink a missing name)
        folder = stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:  # missing, or a name the system cannot look up (too long)
        return
    if folder:
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _recover_locked(target: Path, locked: bool) -> bool:
    pattern = _leftover_pattern(target.name)
    olds: list[Path] = []
    changed = False
    for entry in target.parent.iterdir():
        match = pattern.match(entry.name)
        # membership is checked now, not on a snapshot: a writer of this process registers
        # its folder before creating it, so a folder listed here that is not registered
        # has no writer
        if match is None or _is_active(entry):
            continue
        kind, pid = match.group(1), int(match.group(2))
        if kind == "old" and (locked or not _pid_alive(pid)):
            if entry.is_dir() and not entry.is_symlink():  # writers only leave real folders
                olds.append(entry)
        elif kind == "tmp" and (pid == os.getpid() or not _pid_alive(pid)):
            _remove(entry)
            changed = True
    if olds and not target.exists():
        newest = max(olds, key=lambda p: p.stat().st_mtime)
        os.rename(newest, target)  # roll back to the last complete version
        _fsync_dir(target.parent)
        olds.remove(newest)
        changed = True
    if target.exists():
        for old in olds:
            _remove(old)
            changed = True
    return changed


def recover_dir(path: str | os.PathLike) -> bool:
    """Resolve what crashed writers of folder ``path`` left behind; True if anything changed.

    When ``path`` is missing but a complete ``<path>.old-*`` exists (a writer died
    between its two renames), that folder is renamed back to ``path``. Stale
    ``.tmp-*``/``.old-*`` siblings are deleted. Safe to call at any time.

    Example::

        recover_dir("hybrid_index")   # before reading a folder another process may have been writing
    """
    target = Path(path).expanduser().absolute()
    if not target.parent.is_dir():
        return False
    with _parent_lock(target.parent) as locked:
        return _recover_locked(target, locked)


_fsync_tree = fsync_tree  # the earlier private name, kept for callers that import it


def _check_owned(target: Path, owned: Collection[str] | None, what: str) -> None:
    if owned is None:
        return
    try:  # one listing, no exists-then-list: another writer may be swapping the folder
        names = os.listdir(target)
    except (FileNotFoundError, NotADirectoryError):
        return
    foreign = sorted(name for name in names if name not in owned)
    if foreign:
        shown = ", ".join(foreign[:8]) + (", ..." if len(foreign) > 8 else "")
        raise FileExistsError(
            f"{target} already holds entries that {what} did not write ({shown}); it replaces the "
            "whole folder, so these would be lost: move them away or choose another folder"
        )


def _resolve_target(path: str | os.PathLike) -> Path:
    try:
        target = Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as exc:  # a symbolic-link loop (RuntimeError before 3.13)
        if isinstance(exc, OSError) and exc.errno != errno.ELOOP:
            raise
        raise OSError(
            errno.ELOOP,
            f"{os.fspath(path)} is (or passes through) a loop of symbolic links; remove the "
            "links or choose another path",
        ) from exc
    if not target.name or target.parent == target:
        raise ValueError(f"cannot replace {os.fspath(path)!r} atomically: name a sub-folder")
    try:  # one stat: a concurrent writer may rename the folder away between two checks
        is_other = not stat.S_ISDIR(os.stat(target).st_mode)
    except FileNotFoundError:
        is_other = False
    except NotADirectoryError:  # a file where a parent folder should be
        files = [p for p in reversed(target.parents) if p.exists() and not p.is_dir()]
        blocker = files[0] if files else target.parent
        raise NotADirectoryError(
            f"cannot write {target}: {blocker} is a file, not a folder; remove it or choose "
            "another path"
        ) from None
    if is_other:
        raise NotADirectoryError(
            f"{target} exists and is not a folder; remove it or choose another path"
        )
    return target


@contextlib.contextmanager
def atomic_dir(
    path: str | os.PathLike,
    owned_entries: Collection[str] | None = None,
    what: str = "this writer",
) -> Iterator[Path]:
    """Yield an empty temporary sibling folder; on success it replaces ``path`` (module docs).

    Args:
        path: the folder to (re)write. Symbolic links are resolved: the target is replaced.
        owned_entries: names the writer puts in the folder. If an existing ``path`` holds
            anything else, ``FileExistsError`` is raised before anything is written (it
            would be lost). ``None`` replaces whatever is there.
        what: how error messages name the writer (e.g. ``"HybridRetriever.persist"``).

    On an exception inside the block the temporary folder is removed and ``path`` is
    left as it was.

    Example::

        with atomic_dir("out/index", owned_entries={"manifest.json", "data"}) as tmp:
            (tmp / "data").mkdir()
            write_everything(tmp)
    """
    target = _resolve_target(path)
    _make_parent(target)
    _check_owned(target, owned_entries, what)
    recover_dir(target)
    token = secrets.token_hex(3)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}-{token}")
    with _ACTIVE_LOCK:
        _ACTIVE.add(str(tmp))
    try:
        try:
            tmp.mkdir()
        except OSError as exc:
            if exc.errno in _UNWRITABLE:
                raise _unwritable(target, exc) from exc
            if exc.errno != errno.ENAMETOOLONG:
                raise
            raise OSError(
                errno.ENAMETOOLONG,
                f"cannot write {target}: the temporary folder beside it ({tmp.name}, "
                f"{len(tmp.name) - len(target.name)} characters longer) is a name or path too "
                "long for the file system; choose a shorter name",
            ) from None
        yield tmp
        fsync_tree(tmp)
        with _parent_lock(target.parent) as locked:
            _recover_locked(target, locked)
            _check_owned(target, owned_entries, what)
            old = target.with_name(f"{target.name}.old-{os.getpid()}-{token}")
            if target.exists():
                os.rename(target, old)
            try:
                os.rename(tmp, target)
            except OSError as exc:  # put the old version back before reporting
                if old.exists() and not target.exists():
                    os.rename(old, target)
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise FileExistsError(
                        f"{target} was recreated by another writer while this one was replacing it"
                    ) from exc
                raise
            _fsync_dir(target.parent)
            if old.exists():
                shutil.rmtree(old, ignore_errors=True)
    finally:
        _remove(tmp)
        with _ACTIVE_LOCK:
            _ACTIVE.discard(str(tmp))
