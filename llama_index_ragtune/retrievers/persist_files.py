"""The files of a persisted retriever folder: their digests when written, their checks when read.

``persist()`` records every file's SHA-256 and size (:func:`file_digests`); loading
checks them all and refuses anything else in the folder (:func:`verify_files`) before
any file is parsed. Folders written before the hashes (format 1) are only checked for
entries no loader may open (:func:`refuse_special_files`): a named pipe, a device or a
socket in the place of a data file would block the load or never end.

Example::

    files = file_digests("idx", exclude={"hybrid_retriever.json"})
    verify_files("idx", {"files": files}, "hybrid_retriever.json")
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Collection, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from llama_index_ragtune._atomic import sha256_file
from llama_index_ragtune._atomic_reads import file_kind, read_capped
from llama_index_ragtune.retrievers.persist_errors import DEFAULT_HINT as _DEFAULT_HINT
from llama_index_ragtune.retrievers.persist_errors import PersistenceError

__all__ = [
    "MAX_MANIFEST_BYTES",
    "check_nothing_unrecorded",
    "file_digests",
    "not_a_file",
    "leads_outside",
    "refuse_outside_link",
    "refuse_special_files",
    "verify_files",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: The largest manifest read (those ``persist()`` writes are a few KiB).
MAX_MANIFEST_BYTES = 16 << 20


def file_digests(folder: str | Path, exclude: Collection[str] = ()) -> dict[str, dict[str, Any]]:
    """``{relative posix path: {"sha256": hex, "bytes": size}}`` of every file under ``folder``.

    Example::

        file_digests("idx", exclude={"hybrid_retriever.json"})
    """
    folder = Path(folder)
    digests: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel in exclude:
            continue
        digests[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return digests


def _safe_relative(rel: Any, manifest_path: Path, hint: str) -> PurePosixPath:
    if not isinstance(rel, str) or not rel:
        raise PersistenceError(f"{manifest_path} is corrupt: a 'files' entry has no name; {hint}")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or "\\" in rel or ":" in rel or "\0" in rel:
        raise PersistenceError(
            f"{manifest_path} lists {rel!r}, which points outside the persist directory; the "
            f"manifest was tampered with — {hint}"
        )
    return pure


def verify_files(
    folder: str | Path, manifest: dict[str, Any], manifest_name: str, hint: str = ""
) -> None:
    """Check every file of ``folder`` against ``manifest["files"]`` (hash, size, nothing extra).

    Raises :class:`PersistenceError` naming the first file that is missing, truncated,
    edited, swapped, or not recorded in the manifest.

    Example::

        verify_files("idx", read_manifest("idx", "m.json", "ragtune-x", 2), "m.json")
    """
    folder = Path(folder)
    hint = hint or _DEFAULT_HINT
    manifest_path = folder / manifest_name
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise PersistenceError(
            f"{manifest_path} is corrupt: 'files' (the content hash of every file) is missing; {hint}"
        )
    listed = set()
    for rel, entry in files.items():
        pure = _safe_relative(rel, manifest_path, hint)
        listed.add(pure.as_posix())
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not _SHA256.match(entry["sha256"])
            or not isinstance(entry.get("bytes"), int)
            or isinstance(entry.get("bytes"), bool)
        ):
            raise PersistenceError(
                f"{manifest_path} is corrupt: the entry of {rel!r} in 'files' needs a 64-digit "
                f"'sha256' and an integer 'bytes'; {hint}"
            )
        path = folder / pure
        try:
            refuse_outside_link(path, folder, manifest_path, hint)
            _check_file(path, entry, manifest_path, hint)
        except OSError as exc:  # a name too long to look up, an unreadable file
            raise PersistenceError(
                f"{path} (recorded in {manifest_path}) cannot be read ({exc.strerror or exc}); "
                f"{hint}"
            ) from None
    for path in _unlisted_entries(folder, listed | {manifest_name}):
        mode = os.lstat(path).st_mode
        if stat.S_ISREG(mode):
            raise PersistenceError(
                f"{path} is not part of the persisted index (not recorded in {manifest_path}); "
                f"remove it, or {hint}"
            )
        what = (
            f"a symbolic link to {os.readlink(path)!r}"
            if stat.S_ISLNK(mode)
            else "a folder holding no file of the index"
            if stat.S_ISDIR(mode)
            else file_kind(mode)
        )
        raise PersistenceError(
            f"{path} is {what}, not part of the persisted index (not recorded in "
            f"{manifest_path}); it was not read (loaders open some names when present, and "
            f"it could block or never end): remove it, or {hint}"
        )


def _unlisted_entries(folder: Path, listed: Collection[str]) -> Iterator[Path]:
    """Every entry under ``folder`` (links not followed) that is neither a listed file nor
    a folder holding one: files, links, named pipes, devices, sockets, empty folders."""
    parents = {parent for rel in listed for parent in PurePosixPath(rel).parents}
    for root, dirs, files in os.walk(folder):
        for name in sorted([*dirs, *files]):
            path = Path(root, name)
            rel = PurePosixPath(path.relative_to(folder).as_posix())
            if rel.as_posix() in listed or (name in dirs and rel in parents):
                continue
            yield path


def leads_outside(path: str | os.PathLike, folder: str | os.PathLike) -> str | None:
    """Where ``path`` really is when a symbolic link (``path`` itself or a folder on the way)
    takes it outside ``folder``; ``None`` when it stays inside. ``folder`` may itself be
    reached through links (``idx -> /data/idx``).

    Example::

        leads_outside("idx/storage/docstore.json", "idx")   # '/home/me/other/docstore.json'
    """
    real, inside = os.path.realpath(path), os.path.realpath(folder)
    return None if os.path.commonpath([real, inside]) == inside else real


def refuse_outside_link(path: Path, folder: Path, manifest_path: Path, hint: str) -> None:
    """Refuse, naming it, a file of the index that a symbolic link leads outside ``folder``:
    ``persist()`` writes no links, and a file read elsewhere can change after it was checked
    (as bundles refuse a manifest outside their version folder)."""
    real = leads_outside(path, folder)
    if real is None:
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:  # a dangling link: the caller names it as what it is
        return
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):  # a pipe or a device: named by its kind
        raise PersistenceError(
            f"{path} leads outside the persist directory {folder} (to {real}) through a "
            f"symbolic link; the files of an index beside {manifest_path.name} are never read "
            f"elsewhere: copy the folder with the files themselves (`cp -rL`), or {hint}"
        )


def not_a_file(path: Path) -> str:
    """What is at ``path`` where a file should be, for an error message: ``"missing"``, a
    symbolic link not leading to a file, a folder, a named pipe, a device, or a file in the
    place of one of its folders.

    Example::

        f"{path} is {not_a_file(path)}"   # '.../docstore.json is a named pipe (FIFO), not the file'
    """
    if path.is_symlink():
        return f"a symbolic link to {os.readlink(path)!r}, which does not lead to a file"
    try:
        return f"{file_kind(os.stat(path).st_mode)}, not the file"
    except OSError:
        pass
    blocker = next((p for p in path.parents if p.is_file()), None)
    return "missing" if blocker is None else f"missing: {blocker} is a file, not a folder"


def _check_file(path: Path, entry: dict[str, Any], manifest_path: Path, hint: str) -> None:
    if not path.is_file():
        raise PersistenceError(
            f"{path} is {not_a_file(path)} (it is recorded in {manifest_path}); the folder was "
            f"copied incompletely or changed after persist(); {hint}"
        )
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise PersistenceError(
            f"{path} holds {size} bytes but {manifest_path} records {entry['bytes']}: it was "
            f"truncated or replaced after persist(); {hint}"
        )
    if sha256_file(path) != entry["sha256"]:
        raise PersistenceError(
            f"{path} does not match the SHA-256 recorded in {manifest_path}: it was edited or "
            f"swapped after persist(); {hint}"
        )


def refuse_special_files(folder: str | Path, manifest_path: Path, hint: str = "") -> None:
    """Refuse, naming it, an entry under ``folder`` that leads to neither a file nor a folder
    (a named pipe, a device, a socket; links followed): loaders open files by name, and
    such an entry would block them or never end. For folders without recorded hashes
    (:func:`verify_files` refuses these and any other unrecorded entry).

    Example::

        refuse_special_files("old_idx", Path("old_idx/hybrid_retriever.json"))
    """
    for root, dirs, files in os.walk(folder):
        for name in sorted([*dirs, *files]):
            path = Path(root, name)
            refuse_outside_link(path, Path(folder), manifest_path, hint or _DEFAULT_HINT)
            try:
                mode = os.stat(path).st_mode
            except OSError:
                continue  # a dangling link: named as missing by the loader that needs it
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise PersistenceError(
                    f"{path} is {file_kind(mode)}, not a file of the index beside "
                    f"{manifest_path}; it was not read (it could block or never end): remove "
                    f"it, or {hint or _DEFAULT_HINT}"
                )


def check_nothing_unrecorded(folder: Path, manifest_name: str, what: str) -> None:
    """Before ``folder`` is persisted again (the whole folder is replaced), refuse with a
    ``FileExistsError`` naming them the entries its manifest does not record: files or
    folders a user put inside the index's own sub-folders, which would be lost. The
    writer's top-level check (``atomic_dir(owned_entries=...)``) sees only the first level.
    A folder without a readable manifest listing its files (format 1, damaged) is left to
    that check.

    Example::

        check_nothing_unrecorded(Path("idx"), "hybrid_retriever.json", "HybridRetriever.persist")
    """
    try:
        raw = read_capped(folder / manifest_name, MAX_MANIFEST_BYTES, "", error=ValueError)
        files = json.loads(raw.decode("utf-8")).get("files")
    except (OSError, ValueError, RecursionError, AttributeError):
        return
    if not isinstance(files, dict) or len(raw) > MAX_MANIFEST_BYTES:
        return
    listed = {rel for rel in files if isinstance(rel, str)} | {manifest_name}
    foreign = [p.relative_to(folder).as_posix() for p in _unlisted_entries(folder, listed)]
    if foreign:
        shown = ", ".join(foreign[:8]) + (", ..." if len(foreign) > 8 else "")
        raise FileExistsError(
            f"{folder} holds entries that {what} did not write ({shown}); it replaces the "
            "whole folder, so these would be lost: move them away or choose another folder"
        )
