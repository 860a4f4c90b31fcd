"""What a reader loads: the version ``CURRENT`` names, and the folder of a version.

Readers take no lock and write nothing (a bundle loads from a read-only location):
``CURRENT`` is read as a plain file, never through a symbolic link, and must hold a
version name; a version folder a killed writer was replacing is read from the complete
copy it left. Writers move ``CURRENT`` in
:mod:`~llama_index_ragtune.pipeline.bundle_folders`.

Example::

    from llama_index_ragtune.pipeline.bundle_current import current_version, resolve_bundle_dir

    current_version("ragtune-demo"), resolve_bundle_dir("ragtune-demo").name   # 'v2', 'v2'
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import unicodedata
from pathlib import Path

from llama_index_ragtune.pipeline.bundle_names import (
    CURRENT,
    MANIFEST,
    REWRITE,
    VERSION_LEFTOVER,
    BundleError,
    bundle_path,
    bundle_versions,
    bundles_root,
    check_version_folder,
    check_version_name,
    exists,
    is_file,
    is_real_dir,
    short,
    skipped_folders,
)
from llama_index_ragtune.pipeline.bundle_reads import decode_text, read_capped

__all__ = ["current_version", "resolve_bundle_dir"]

_POINTER_BYTES = 4096  # the most of CURRENT that is read
logger = logging.getLogger(__name__)


def current_version(path: str | Path) -> str | None:
    """The version ``CURRENT`` names (None when there is no bundle yet).

    Raises ``BundleError`` when ``CURRENT`` holds anything but a version name
    (``../elsewhere``, an absolute path, binary junk) or is a symbolic link (never followed:
    it could lead outside the bundles folder; writers replace the link, not its target).
    """
    root = bundles_root(path)
    pointer = root / CURRENT
    if not exists(pointer):
        return None
    if os.path.islink(pointer):
        raise _linked_pointer(pointer, root)
    if not is_file(pointer):
        raise BundleError(
            f"{pointer} is not a file; it must hold the served version's name; versions here: "
            f"{bundle_versions(root) or 'none'}; "
            + (
                "remove the folder, then `ragtune rollback --to VERSION` writes it"
                if is_real_dir(pointer)
                else "`ragtune rollback --to VERSION` rewrites it"
            )
        )
    try:  # never through a link, nor a pipe or device, even one put there since the check above
        data = read_capped(  # a name is a few bytes: a huge file is not read whole
            pointer,
            _POINTER_BYTES,
            f"versions here: {bundle_versions(root) or 'none'}; remove it, then "
            "`ragtune rollback --to VERSION` writes it",
            follow_links=False,
        )
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _linked_pointer(pointer, root) from None
        raise
    if len(data) > _POINTER_BYTES:  # far too long for a version name (the message cuts it)
        check_version_name(data.decode("utf-8", "backslashreplace"), str(pointer), root)
    try:
        text = decode_text(data).strip()  # a byte order mark a Windows editor wrote: dropped
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


def resolve_bundle_dir(path: str | Path, version: str | None = None) -> Path:
    """The version folder for ``path``: a version folder, a ``bundles`` folder or a run's
    ``--out`` (their ``CURRENT`` version unless ``version`` is given)."""
    path = bundle_path(path)  # once: see bundles_root
    if version is None and is_file(path / MANIFEST):
        return check_version_folder(path)  # bundles/v2 a link to elsewhere: refused
    root = bundles_root(path)
    if version is None:
        if not root.is_dir() and not exists(path):
            raise BundleError(f"bundle not found: {path} does not exist{_spelled_otherwise(path)}")
        version = current_version(root)
        versions = bundle_versions(root) if version is None else []
        if versions:  # copied without CURRENT (`cp -r bundles/v*`): which one is served?
            newest = versions[-1]
            raise BundleError(
                f"{root / CURRENT} not found, so no version is marked as served, but {root} "
                f"holds the versions {versions}{skipped_folders(root)} (a copy that left "
                f"CURRENT out?); load one by name (load_bundle(path, version={newest!r})), or "
                f"serve one with `ragtune rollback --bundle {root} --to {newest}`, which writes "
                f"{CURRENT}"
            )
        if version is None:
            enclosing = _enclosing_bundle(path)
            if enclosing is not None:  # bundles/CURRENT, v2/manifest.json, v2/index
                raise BundleError(
                    f"{path} is a {'file' if is_file(path) else 'folder'} inside a bundle, not a "
                    f"bundle folder: pass {enclosing}"
                )
            raise BundleError(
                f"{root / CURRENT} not found: {path} holds no bundle (pass the --out folder of a "
                "tuning run, its bundles/ folder, or a version folder)"
            )
    else:
        check_version_name(version, "the version argument", root)
    folder = root / version
    if is_file(folder / MANIFEST):
        return check_version_folder(folder)
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


def _enclosing_bundle(path: Path) -> Path | None:
    """The version folder (holding ``manifest.json``) or bundles folder (holding ``CURRENT``)
    that ``path`` is a file or folder inside of; None when there is none."""
    for folder in path.parents:
        if is_file(folder / MANIFEST) or (is_file(folder / CURRENT) and folder / CURRENT == path):
            return folder
    return None


def _replaced_copy(root: Path, version: str) -> Path | None:
    """The newest complete ``<version>.old-*`` folder in ``root`` (None: none)."""
    found = []
    try:
        names = os.listdir(root)
    except OSError:
        return None
    for name in names:
        m = VERSION_LEFTOVER.match(name)
        if (
            m
            and m.group(1) == version
            and ".old-" in name
            and is_real_dir(root / name)  # what a writer left, not a link to elsewhere
            and is_file(root / name / MANIFEST)
        ):
            with contextlib.suppress(OSError):
                found.append(((root / name).stat().st_mtime, root / name))
    return max(found)[1] if found else None


def _spelled_otherwise(path: Path) -> str:
    """A hint naming the entries beside the first missing part of ``path`` whose names differ
    from it only in Unicode form (NFC / NFD: macOS file names, copied archives) or letter
    case; "" when there is none."""
    for part in (*reversed(path.parents), path):
        if exists(part):
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
