"""The names in a bundles folder: version names, what the folder lists, ``BundleError``.

A version is a ``v<number>`` folder holding ``manifest.json``; a name merely like one
(``v02``, ``V2``) is never read as one, and the folders of writers (``v3.tmp-*``,
``v3.old-*``) are listed as unfinished. Nothing here writes or takes a lock: readers and
writers (:mod:`~llama_index_ragtune.pipeline.bundle_folders`) share it.

Example::

    from llama_index_ragtune.pipeline.bundle_names import bundle_versions, canonical_version

    bundle_versions("ragtune-demo"), canonical_version("V02")      # ['v1', 'v2'], 'v2'
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

__all__ = [
    "BUNDLES_DIR",
    "CURRENT",
    "MANIFEST",
    "MAX_VERSION",
    "REWRITE",
    "VERSION_LEFTOVER",
    "VERSION_NAME",
    "BundleError",
    "bundle_path",
    "bundle_versions",
    "bundles_root",
    "canonical_version",
    "check_version_name",
    "check_version_folder",
    "exists",
    "is_file",
    "is_real_dir",
    "misnamed_versions",
    "short",
    "skipped_folders",
    "unfinished_versions",
]

MANIFEST = "manifest.json"
CURRENT = "CURRENT"
BUNDLES_DIR = "bundles"
VERSION_NAME = re.compile(r"v([1-9][0-9]{0,8})\Z")
"""The one spelling of a version name: ``v`` and an ASCII number without leading zeros (``v2``,
never ``v02``, ``V2``, ``v+2``, ``v2 `` or ``v٢``: two names must not mean one version)."""
MAX_VERSION = 999_999_999  # the highest number VERSION_NAME reads
REWRITE = "run the tuning pipeline again to write a fresh bundle"
# version folders being written or replaced by writers, running or killed (_atomic.atomic_dir)
VERSION_LEFTOVER = re.compile(r"(v[1-9][0-9]{0,8})\.(?:tmp|old)-([0-9]+)-[0-9a-f]+\Z")
# a name a person may have meant as a version (v02, V2, "v2 ", v+2, v٢): never read as one
_VERSION_LIKE = re.compile(r"\s*[vV]\s*\+?\s*0*(\d{1,9})\s*\Z")


class BundleError(ValueError):
    """A bundle is missing, incomplete, edited, or of another format (the message names the file)."""


def bundles_root(path: str | Path) -> Path:
    """The ``bundles`` folder for a run's ``--out`` folder or the ``bundles`` folder itself.

    Always an absolute path: a relative one is resolved against the working directory once,
    here, so a later ``os.chdir`` (another thread, a server's worker) cannot make a writer
    or reader act on another folder than the one it checked.
    """
    path = bundle_path(path)
    return path if path.name == BUNDLES_DIR or exists(path / CURRENT) else path / BUNDLES_DIR


def bundle_path(value: Any, what: str = "the bundle path") -> Path:
    """``value`` as an absolute, ``~``-expanded path, or an error naming ``what``: a
    ``TypeError`` for ``None``, a number, ``bytes`` or a list (pathlib's own error does not
    say which argument), a ``BundleError`` for ``""`` or blanks (pathlib reads them as the
    working folder: an unset setting would roll back or load whatever bundle is there), a
    NUL byte, an unknown ``~user`` or a name too long for the system.

    Example::

        bundle_path("~/runs/shop")          # PosixPath('/home/me/runs/shop')
    """
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"{what} must be a folder path (str or Path), got {type(value).__name__} {short(value)}"
        )
    text = os.fspath(value)
    if not isinstance(text, str):  # an os.PathLike returning bytes
        raise TypeError(f"{what} must be a folder path (str or Path), got bytes {short(text)}")
    if not text.strip():
        raise BundleError(
            f"{what} is empty ({text!r}); name the run's --out folder, its bundles/ folder or a "
            "version folder (use '.' for the current folder)"
        )
    if "\0" in text:
        raise BundleError(f"{what} {short(text)} holds a NUL byte, which no file name can hold")
    try:
        path = Path(text).expanduser().absolute()
    except RuntimeError:  # "~user/..." of an unknown user, or no home folder
        raise BundleError(
            f"cannot expand the '~' of {what} {short(text)} (no such home folder); give the "
            "full path"
        ) from None
    try:
        os.lstat(path)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise BundleError(
                f"{what} {short(text)} is a name too long for this system ({len(text)} "
                "characters); give the bundle's real folder"
            ) from None
    return path


def exists(path: Path) -> bool:
    """``path`` exists (a dangling link counts); False for a name the system cannot look up."""
    try:
        return os.path.lexists(path)
    except (OSError, ValueError):
        return False


def is_file(path: Path) -> bool:
    """``path`` is a file; False for a name the system cannot look up (too long, ...)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def is_real_dir(path: Path) -> bool:
    """``path`` is a folder, not a link to one (False for a name the system cannot look up)."""
    try:
        return path.is_dir() and not path.is_symlink()
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

    A ``v<n>`` entry that is not a folder (a file, a dangling link) is named too.
    """
    root = bundles_root(path)
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    out = []
    for name in names:
        if VERSION_NAME.match(name):
            if (root / name).is_dir():
                if not is_file(root / name / MANIFEST):
                    out.append(f"{name} (no {MANIFEST})")
            elif os.path.islink(root / name):  # dangling: where its folder was moved or lost
                out.append(f"{name} (a symbolic link to nothing, not a version folder)")
            else:  # a file copied or written in the folder's place
                out.append(f"{name} (a file, not a version folder)")
        elif m := VERSION_LEFTOVER.match(name):
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


def check_version_folder(folder: Path) -> Path:
    """``folder`` unless it is a version folder of a bundles folder that a symbolic link leads
    outside that bundles folder (``bundles/v2 -> /tmp/other``): then ``BundleError`` naming
    the link and its target. Writers never make such a link, and what it leads to can be
    changed by whoever owns the target after it was checked, so no reader loads it, no
    refresh starts from it and no rollback serves it (as a manifest or ``CURRENT`` that a
    link leads elsewhere is refused).

    Example::

        check_version_folder(Path("runs/shop/bundles/v2"))     # the folder itself
    """
    root = folder.parent
    if not os.path.islink(folder) or bundles_root(root) != root:
        return folder
    try:
        target = os.readlink(folder)
        real, inside = os.path.realpath(folder), os.path.realpath(root)
    except (OSError, ValueError):
        target, real, inside = "an unreadable target", "", "-"
    if real and os.path.commonpath([real, inside]) == inside and real != inside:
        return folder  # a link to another folder of the same bundles folder
    raise BundleError(
        f"{folder} is a symbolic link (to {short(target, 200)}) leading outside the bundles "
        f"folder {root}: a bundle version is never read, refreshed or served through a link "
        f"to elsewhere (its files could change after they were checked); replace the link "
        f"with the folder itself (`cp -rL`), or remove it; versions here: "
        f"{[v for v in bundle_versions(root) if v != folder.name] or 'none'}"
    )
