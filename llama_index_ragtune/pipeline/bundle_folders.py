"""Where bundle versions live: the ``bundles/`` folder, its ``CURRENT`` pointer, version names.

A run's ``--out`` folder holds ``bundles/v1``, ``bundles/v2``, ... and ``bundles/CURRENT``
naming the served one (layout: :mod:`~llama_index_ragtune.pipeline.bundle`). Version
names are ``v<number>`` and never lead outside ``bundles/``; every error is a
:class:`BundleError` naming the file and saying how to fix it.

Example::

    from llama_index_ragtune.pipeline.bundle_folders import bundle_versions, current_version

    bundle_versions("ragtune-demo"), current_version("ragtune-demo")    # ['v1', 'v2'], 'v2'
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from llama_index_ragtune._atomic import atomic_write_text, recover_dir

MANIFEST = "manifest.json"
CURRENT = "CURRENT"
BUNDLES_DIR = "bundles"
VERSION_NAME = re.compile(r"^v(\d{1,9})$")
REWRITE = "run the tuning pipeline again to write a fresh bundle"


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


def next_version(path: str | Path) -> str:
    """The name the next bundle gets: ``v<highest + 1>`` (``v1`` for the first)."""
    root = bundles_root(path)
    numbers = [
        int(m.group(1))
        for p in (root.iterdir() if root.is_dir() else [])
        if (m := VERSION_NAME.match(p.name.split(".", 1)[0]))
    ]
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
